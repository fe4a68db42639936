"""Turns a named sweep into a Ray Tune run, tracked in MLflow. The only package that knows Tune."""
