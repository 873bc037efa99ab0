"""DPO/SFT training (GRAVITY section 3.4)."""
