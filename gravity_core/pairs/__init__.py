"""Preference data (GRAVITY section 3.3): scenario pool, interest, value and personality pairs."""
