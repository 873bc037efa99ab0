"""User profiles (GRAVITY section 3.2): demographics, interests, values, personality."""
