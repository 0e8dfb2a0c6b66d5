"""The RL training driver (plain Python) and the learner update."""
