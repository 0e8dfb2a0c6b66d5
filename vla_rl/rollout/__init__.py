"""Rollouts of a policy in a vector env (no Ray here): evaluation now, trajectory collection later."""
