from defectcam.modeling.classifier import ClassifierOutput, DefectClassifier, fold_batchnorm

__all__ = ["ClassifierOutput", "DefectClassifier", "fold_batchnorm"]
