"""Networks without a method: encoders, the MLP heads built from one block spec, the pair model."""
