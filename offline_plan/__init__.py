"""The offline plan: the Pulumi program run under the SDK's mock runtime, recorded and rendered."""

from .recorder import Plan, Registration, record_plan

__all__ = ["Plan", "Registration", "record_plan"]
