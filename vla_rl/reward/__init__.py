"""Reward sources for RL: simulator success, a learned vision-language progress critic, composites."""
