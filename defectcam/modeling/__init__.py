from defectcam.modeling.classifier import ClassifierOutput, DefectClassifier

__all__ = ["ClassifierOutput", "DefectClassifier"]
