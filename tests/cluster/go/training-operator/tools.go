//go:build tools

// Package tools pins the Kubeflow Training Operator manager for tests/cluster/build.py.
package tools

import (
	_ "github.com/kubeflow/training-operator/cmd/training-operator.v1"
)
