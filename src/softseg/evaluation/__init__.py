"""Probability maps + dataset -> a typed result: metric functions, evaluate, matching, the result schema."""
