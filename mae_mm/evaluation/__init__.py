"""Evaluation of pretrained encoders: weighted k-NN classification on frozen features."""
from .knn import extract_features, knn_class_scores, knn_evaluate, topk_accuracy

__all__ = ['extract_features', 'knn_class_scores', 'knn_evaluate', 'topk_accuracy']
