"""Reusable Pulumi components for the private Docker registry.

One concern per module: ``settings`` reads and validates stack configuration, ``registry_config``
computes the registry's own settings, ``storage`` the S3/KMS/IAM and volume resources, ``workload``
the Kubernetes objects that run Distribution.
"""
