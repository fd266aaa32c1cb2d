"""mmsenti: fast multimodal sentiment analysis research — train, compress and ship fused models."""

__version__ = "0.1.0"
