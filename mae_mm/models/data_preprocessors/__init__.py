from .mae_data_preprocessor import MAEDataPreprocessor

__all__ = ['MAEDataPreprocessor']
