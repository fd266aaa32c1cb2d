"""Models: encoders, fusion modules and the sentiment model that uses them."""

from mmsenti.models.sentiment_model import SentimentModel, SentimentModelConfig, SentimentOutput

__all__ = ["SentimentModel", "SentimentModelConfig", "SentimentOutput"]
