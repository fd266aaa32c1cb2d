"""mmsenti."""
