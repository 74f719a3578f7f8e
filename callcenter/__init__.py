"""Elder-care call-center engine."""
