from .masked_autoencoder import MaskedAutoencoder

__all__ = ['MaskedAutoencoder']
