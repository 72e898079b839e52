#!/usr/bin/env bash
# Every stack of the program as a JSON list, one per Pulumi.<stack>.yaml: the matrix of the preview and
# drift workflows (the offline plan and the tests find the same files, offline_plan.recorder.discover_stacks).
set -euo pipefail
cd "$(dirname "$0")/.."
for file in Pulumi.*.yaml; do
    stack="${file#Pulumi.}"
    printf '%s\n' "${stack%.yaml}"
done | jq -Rnc '[inputs]'
