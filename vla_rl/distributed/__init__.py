"""Ray integration: rollout actors, weight broadcast, cluster helpers. The only package importing ray."""
