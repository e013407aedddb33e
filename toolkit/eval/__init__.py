"""Evaluation of anonymization: identity leak, keypoint preservation, realism, speed."""
