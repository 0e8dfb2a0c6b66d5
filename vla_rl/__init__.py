"""VLA reinforcement-learning post-training for robot arms."""

__version__ = "0.1.0"
