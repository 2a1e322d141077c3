{{/* The chart name; also the app.kubernetes.io/name label. */}}
{{- define "meteor-operator.name" -}}
meteor-operator
{{- end }}

{{/*
Name of every object: fullnameOverride, else the release name when it already contains
"meteor-operator", else <release>-meteor-operator. Truncated to 63 characters.
*/}}
{{- define "meteor-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "meteor-operator.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "meteor-operator.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* helm.sh/chart label value. */}}
{{- define "meteor-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "meteor-operator.labels" -}}
helm.sh/chart: {{ include "meteor-operator.chart" . }}
{{ include "meteor-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the operator pods (immutable: never add to these). */}}
{{- define "meteor-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meteor-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Name of the ServiceAccount. */}}
{{- define "meteor-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "meteor-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image: repository@digest, else repository:tag (tag defaults to appVersion). */}}
{{- define "meteor-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Fails rendering on value combinations the schema cannot express. */}}
{{- define "meteor-operator.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicas > 1 needs leaderElection.enabled=true: without it every replica would reconcile" }}
{{- end }}
{{- end }}

{{/*
The operator's permissions on namespaced objects (bound cluster-wide, or in watchNamespace only).
Exactly the permissions in hack/rbac-used.txt, which the tests record from the requests the code
really sends (tests/support/rbac.rs); hack/check-chart.py fails CI when the two differ. A
server-side apply (patch) of an object that may not exist yet also needs create.
*/}}
{{- define "meteor-operator.namespacedRules" }}
  # The MeteorApps it reconciles: watched (never read one by one, never written) ...
  - apiGroups: ["meteorfleet.dev"]
    resources: ["meteorapps"]
    verbs: ["list", "watch"]
  # ... and their status, written with server-side apply of the status subresource.
  - apiGroups: ["meteorfleet.dev"]
    resources: ["meteorapps/status"]
    verbs: ["patch"]
  # App and worker Deployments: cached (list, watch), a namesake checked (get), written with
  # server-side apply (patch, create), the worker tier deleted when it goes back to 0.
  - apiGroups: ["apps"]
    resources: ["deployments"]
    verbs: ["get", "list", "watch", "create", "patch", "delete"]
  # ReplicaSets, read by the name a cached pod's owner reference gives: the one that ran the last
  # available pod template, when a rollback is written (listed by that template's label only
  # when none of its pods is left), and the proxy tier's own, before a scale-down asks its pods.
  - apiGroups: ["apps"]
    resources: ["replicasets"]
    verbs: ["get", "list"]
  # The operator's pods, cached (list, watch; never listed in a reconcile): new pods' restarts
  # (crash-loop rollback) and, before a scale-down, the app pods get a pod-deletion-cost (their
  # open sessions, from the proxy pods' admin endpoints) so the emptiest go first (patch).
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["list", "watch", "patch"]
  # The HorizontalPodAutoscaler of spec.autoscaling (it scales the MeteorApp's scale
  # subresource): cached, namesake/get, applied, deleted when autoscaling is turned off.
  - apiGroups: ["autoscaling"]
    resources: ["horizontalpodautoscalers"]
    verbs: ["get", "list", "watch", "create", "patch", "delete"]
  # The front Service, the proxy's app-only Service (deleted when the proxy is turned off) and
  # the managed-MongoDB headless Service: cached, namesake/get, applied.
  - apiGroups: [""]
    resources: ["services"]
    verbs: ["get", "list", "watch", "create", "patch", "delete"]
  # PodDisruptionBudgets of the app tier (replicas > 1, deleted otherwise) and of managed MongoDB.
  - apiGroups: ["policy"]
    resources: ["poddisruptionbudgets"]
    verbs: ["get", "list", "watch", "create", "patch", "delete"]
  # Settings JSON and Mongo URL references: read (get); their metadata watched to re-reconcile
  # the apps that reference one (list, watch).
  - apiGroups: [""]
    resources: ["configmaps"]
    verbs: ["get", "list", "watch"]
  # The same for Secrets; managed MongoDB also creates its credential Secrets once (create) and
  # applies the URLs Secret (patch, create).
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["get", "list", "watch", "create", "patch"]
  # --- Managed MongoDB (spec.mongo.managed; README, "Managed MongoDB") ---
  # Member StatefulSets: cached (a member becoming ready triggers the next step), applied; read
  # once before the first apply, in case another owner holds the name.
  - apiGroups: ["apps"]
    resources: ["statefulsets"]
    verbs: ["get", "list", "watch", "create", "patch"]
  # Member volumes: read by name, and grown (merge patch), only when storage.size grows.
  - apiGroups: [""]
    resources: ["persistentvolumeclaims"]
    verbs: ["get", "patch"]
  # The NetworkPolicy that lets only the app and the operator reach mongod: cached, applied;
  # read once before the first apply, in case another owner holds the name.
  - apiGroups: ["networking.k8s.io"]
    resources: ["networkpolicies"]
    verbs: ["get", "list", "watch", "create", "patch"]
  # --- end of managed MongoDB ---
  # --- Routing (spec.routing; README, "Routing") ---
  # The proxy's identity: its ServiceAccount, and a RoleBinding granting it the proxy
  # ClusterRole (proxy-clusterrole.yaml) in the app's namespace; cached, namesake/get, applied,
  # deleted with the proxy.
  - apiGroups: [""]
    resources: ["serviceaccounts"]
    verbs: ["get", "list", "watch", "create", "patch", "delete"]
  - apiGroups: ["rbac.authorization.k8s.io"]
    resources: ["rolebindings"]
    verbs: ["get", "list", "watch", "create", "patch", "delete"]
  # The Role of its own each app's proxies had before they shared that ClusterRole: read to
  # see that the app controls it, then deleted, once per app.
  - apiGroups: ["rbac.authorization.k8s.io"]
    resources: ["roles"]
    verbs: ["get", "delete"]
  # Never read by the operator: Kubernetes lets it bind the proxy ClusterRole only with
  # permissions it holds itself (no escalate or bind verbs are asked for instead).
  - apiGroups: ["discovery.k8s.io"]
    resources: ["endpointslices"]
    verbs: ["get", "list", "watch"]
  # The Ingress, HTTPRoute and cert-manager Certificate in front of the front Service.
  - apiGroups: ["networking.k8s.io"]
    resources: ["ingresses"]
    verbs: ["get", "list", "watch", "create", "patch", "delete"]
  - apiGroups: ["gateway.networking.k8s.io"]
    resources: ["httproutes"]
    verbs: ["get", "list", "watch", "create", "patch", "delete"]
  - apiGroups: ["cert-manager.io"]
    resources: ["certificates"]
    verbs: ["get", "list", "watch", "create", "patch", "delete"]
  # The proxy pods' PodMonitor (routing.proxy.podMonitor), where the Prometheus Operator is.
  - apiGroups: ["monitoring.coreos.com"]
    resources: ["podmonitors"]
    verbs: ["get", "list", "watch", "create", "patch", "delete"]
  # --- end of routing ---
  # Events on MeteorApps: kube-runtime's Recorder uses events.k8s.io/v1 only; it creates an
  # event and patches it when the same event repeats.
  - apiGroups: ["events.k8s.io"]
    resources: ["events"]
    verbs: ["create", "patch"]
{{- end }}

{{/* The operator's permissions on cluster-scoped objects: bound cluster-wide in every case. */}}
{{- define "meteor-operator.clusterRules" }}
  # Whether a StorageClass allows volume expansion.
  - apiGroups: ["storage.k8s.io"]
    resources: ["storageclasses"]
    verbs: ["get"]
  # Whether Gateway API and cert-manager are installed: their two CRDs watched by name.
  - apiGroups: ["apiextensions.k8s.io"]
    resources: ["customresourcedefinitions"]
    verbs: ["list", "watch"]
{{- end }}
