"""Methods, one file each behind one protocol (``base``), their losses and the registry."""
