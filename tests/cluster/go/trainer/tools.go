//go:build tools

// Package tools pins the Kubeflow Trainer v2 manager and the JobSet controller for
// tests/cluster/build.py.
package tools

import (
	_ "github.com/kubeflow/trainer/v2/cmd/trainer-controller-manager"
	_ "sigs.k8s.io/jobset"
)
