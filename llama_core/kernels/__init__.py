"""How weights are laid out and multiplied at inference: the decode layout, weight-only int8."""
