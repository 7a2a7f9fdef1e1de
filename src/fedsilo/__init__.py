"""fedsilo: federated fine-tuning of a shared BERT head across banks and hospitals."""

__version__ = "0.1.0"
