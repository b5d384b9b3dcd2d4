{{/*
Every permission the operator has, and why. The operator's own calls are listed in
kubetune.controller.cluster.API_CALLS, kopf's in tests/chart/test_rbac.py; that test fails when
these rules grant more or less than both together. No wildcards.
*/}}

{{/* Rules on namespaced resources: in the ClusterRole, or in a Role per watched namespace. */}}
{{- define "kubetune.rules.namespaced" -}}
# FineTuneJobs and ModelHubs: kopf lists and watches them and patches its finalizer and
# annotations; the operator reads hubs that jobs and other hubs refer to.
- apiGroups: [kubetune.io]
  resources: [finetunejobs, modelhubs]
  verbs: [get, list, watch, patch]
- apiGroups: [kubetune.io]
  resources: [finetunejobs/status, modelhubs/status]
  verbs: [get, patch]
# The training job of each FineTuneJob: created once, suspended and resumed with a patch. The
# kinds trainingBackend allows: TrainJob (Kubeflow Trainer v2), PyTorchJob (Training Operator).
{{- if include "kubetune.backend.trainjob" . }}
- apiGroups: [trainer.kubeflow.org]
  resources: [trainjobs]
  verbs: [get, list, watch, create, patch]
{{- end }}
{{- if include "kubetune.backend.pytorchjob" . }}
- apiGroups: [kubeflow.org]
  resources: [pytorchjobs]
  verbs: [get, list, watch, create, patch]
{{- end }}
# The trainer's config, next to its training job.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create]
# Secrets named in hubs and jobs: checked to exist, and used to check model and data in S3
# (get). Each job of a presigned hub gets its own Secret of model URLs, which the operator
# creates, refreshes and deletes (create, patch, delete: only a Secret the job owns).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create, patch, delete]
# Pods of a failed training job: their termination message says why (list only, no logs).
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# Events on FineTuneJobs (phase changes, failures).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if .Values.watchNamespaces }}
# kopf peering in each watched namespace: replicas see each other; only one acts.
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [list, watch, patch]
{{- end }}
{{- end }}

{{/* Rules on cluster-scoped resources: always in a ClusterRole. */}}
{{- define "kubetune.rules.cluster" -}}
{{- if .Values.watchNamespaces -}}
# Namespace labels, for hubs' sharedWith.namespaceSelector (get); kopf lists and watches
# namespaces to match the watched ones.
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get, list, watch]
{{- else -}}
# Namespace labels, for hubs' sharedWith.namespaceSelector.
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get]
# kopf peering for the whole cluster: replicas see each other; only one acts.
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  verbs: [list, watch, patch]
{{- end }}
# kopf notices CRDs installed or upgraded while it runs.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- end }}
