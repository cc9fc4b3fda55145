// Package deploy holds the configuration of warmpath's local stack: the
// service's Dockerfile, the healthcheck probe its image runs, and the
// Prometheus, Grafana, Tempo and OpenTelemetry Collector configuration that
// compose.yaml (at the repository root) mounts, the probe image for upstream
// images without a shell, and the Kubernetes manifests under k8s/. It has no
// code; its tests validate compose.yaml, the manifests and these files
// against each other and against the service's configuration.
package deploy
