"""Predict every flow of a design from the model, statically: nothing is started.

decide (which rule of a host takes a packet) -> path (routes, firewalls, NAT) -> ike (who
answers, with what) -> flows (one flow's result and why) -> matrix (every pair and service;
the lint of written expectations) -> render (terminal and JSON).
"""

from lab.predict.flows import Flow, Prediction, predict_flow
from lab.predict.matrix import Contradiction, lint, matrix_flows, predict_matrix

__all__ = ["Flow", "Prediction", "predict_flow", "Contradiction", "lint", "matrix_flows", "predict_matrix"]
