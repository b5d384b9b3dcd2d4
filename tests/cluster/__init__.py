"""A real Kubernetes control plane for the tests (etcd, kube-apiserver, controller-manager,
scheduler, kwok nodes, Training Operator, Kueue) built from pinned Go modules (build.py)."""
