"""Ray sampling and NeuS-style volume rendering of an SDF field."""
