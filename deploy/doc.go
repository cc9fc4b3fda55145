// Package deploy holds the configuration of warmpath's local stack: the
// service's Dockerfile, the healthcheck probe its image runs, and the
// Prometheus, Grafana and Tempo configuration that compose.yaml (at the
// repository root) mounts. It has no code; its tests validate compose.yaml
// and these files against each other and against the service's
// configuration.
package deploy
