# syntax=docker/dockerfile:1
# An upstream image (BASE, pinned in compose.yaml) plus warmpath's static
# healthcheck probe at /usr/local/bin/healthcheck, for images that ship no
# shell, wget or curl to run a compose health check with (the OpenTelemetry
# Collector, Tempo, Pyroscope). Build context: the repository root.
#
#   docker build -f deploy/probe.Dockerfile --build-arg BASE=grafana/tempo:2.6.1 .
ARG BASE

FROM golang:1.26 AS probe
WORKDIR /src
COPY go.mod go.sum ./
COPY deploy/healthcheck ./deploy/healthcheck
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/healthcheck ./deploy/healthcheck

FROM ${BASE}
COPY --from=probe /out/healthcheck /usr/local/bin/healthcheck
