package deploy_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// k8sDir holds the Kubernetes manifests.
const k8sDir = "k8s"

// manifests are the decoded objects of deploy/k8s, one of each kind.
type manifests struct {
	deployment *appsv1.Deployment
	service    *corev1.Service
	pdb        *policyv1.PodDisruptionBudget
	hpa        *autoscalingv2.HorizontalPodAutoscaler
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
}

// decodeNew decodes raw strictly (an unknown field fails) into a new T at *p.
func decodeNew[T any](raw []byte, p **T) error {
	*p = new(T)
	return yaml.UnmarshalStrict(raw, *p)
}

// decodeByName decodes raw strictly into a new T, filed under its name.
func decodeByName[T any, P interface {
	*T
	GetName() string
}](raw []byte, byName map[string]*T) error {
	o := P(new(T))
	if err := yaml.UnmarshalStrict(raw, o); err != nil {
		return err
	}
	byName[o.GetName()] = o
	return nil
}

// loadManifests decodes every resource kustomization.yaml lists, strictly
// (an unknown or misspelt field fails), into its k8s.io/api type, and checks
// that every YAML file in the directory is listed.
func loadManifests(t *testing.T) manifests {
	t.Helper()
	var kust struct {
		Resources []string `json:"resources"`
	}
	raw, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	files, _ := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" && !slices.Contains(kust.Resources, b) {
			t.Errorf("%s is not listed in kustomization.yaml resources", b)
		}
	}
	m := manifests{configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
	// By apiVersion and kind: decode strictly into m.
	decoders := map[string]func(raw []byte) error{
		"apps/v1 Deployment":                     func(raw []byte) error { return decodeNew(raw, &m.deployment) },
		"v1 Service":                             func(raw []byte) error { return decodeNew(raw, &m.service) },
		"policy/v1 PodDisruptionBudget":          func(raw []byte) error { return decodeNew(raw, &m.pdb) },
		"autoscaling/v2 HorizontalPodAutoscaler": func(raw []byte) error { return decodeNew(raw, &m.hpa) },
		"v1 ConfigMap":                           func(raw []byte) error { return decodeByName(raw, m.configMaps) },
		"v1 Secret":                              func(raw []byte) error { return decodeByName(raw, m.secrets) },
	}
	for _, name := range kust.Resources {
		raw, err := os.ReadFile(filepath.Join(k8sDir, name))
		if err != nil {
			t.Fatalf("kustomization.yaml lists %s: %v", name, err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(raw, &tm); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		decode, ok := decoders[tm.APIVersion+" "+tm.Kind]
		if !ok {
			t.Fatalf("%s: unexpected %s %s", name, tm.APIVersion, tm.Kind)
		}
		if err := decode(raw); err != nil {
			t.Fatalf("%s: strict decode as %s: %v", name, tm.Kind, err)
		}
	}
	return m
}

// configDefault returns the envDefault of a variable in app/internal/config
// (parsed from the source: package deploy cannot import an app/internal
// package).
func configDefault(t *testing.T, name string) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(root, "app/internal/config/config.go"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`env:"` + name + `" envDefault:"([^"]*)"`).FindSubmatch(src)
	if m == nil {
		t.Fatalf("config.go has no envDefault for %s", name)
	}
	return string(m[1])
}

// addrPort returns the port of a listen address such as ":8080".
func addrPort(t *testing.T, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return int32(n)
}

func TestK8sManifests(t *testing.T) {
	m := loadManifests(t)
	for kind, missing := range map[string]bool{
		"Deployment": m.deployment == nil, "Service": m.service == nil, "PodDisruptionBudget": m.pdb == nil,
		"HorizontalPodAutoscaler": m.hpa == nil, "ConfigMap": len(m.configMaps) == 0, "Secret": len(m.secrets) == 0,
	} {
		if missing {
			t.Fatalf("deploy/k8s has no %s", kind)
		}
	}
	d := m.deployment
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]

	// The environment: every key of the ConfigMap and Secret the container
	// loads is a variable the service reads, and the effective values
	// (ConfigMap, else config.go's default) drive the checks below.
	known := serviceEnvNames(t)
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm, ok := m.configMaps[from.ConfigMapRef.Name]
			if !ok {
				t.Fatalf("envFrom ConfigMap %q is not in deploy/k8s", from.ConfigMapRef.Name)
			}
			for k, v := range cm.Data {
				env[k] = v
			}
		case from.SecretRef != nil:
			s, ok := m.secrets[from.SecretRef.Name]
			if !ok {
				t.Fatalf("envFrom Secret %q is not in deploy/k8s", from.SecretRef.Name)
			}
			for k := range s.StringData {
				env[k] = "(secret)"
			}
			for k := range s.Data {
				env[k] = "(secret)"
			}
		}
	}
	for k := range env {
		if !known[k] {
			t.Errorf("the container's environment sets %s, which the service does not read", k)
		}
	}
	for _, secret := range []string{"DATABASE_URL", "VALKEY_URL", "ADMIN_TOKEN"} {
		if env[secret] != "(secret)" {
			t.Errorf("%s must come from the Secret, not the ConfigMap", secret)
		}
	}
	value := func(name string) string {
		if v, ok := env[name]; ok {
			return v
		}
		return configDefault(t, name)
	}

	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if got, want := ports["http"], addrPort(t, value("HTTP_ADDR")); got != want {
		t.Errorf("container port http = %d, HTTP_ADDR listens on %d", got, want)
	}
	adminAddr := value("ADMIN_ADDR")
	if got, want := ports["admin"], addrPort(t, adminAddr); got != want {
		t.Errorf("container port admin = %d, ADMIN_ADDR listens on %d", got, want)
	}
	if host, _, _ := net.SplitHostPort(adminAddr); host == "127.0.0.1" || host == "localhost" {
		t.Errorf("ADMIN_ADDR %q is loopback: Prometheus cannot scrape it", adminAddr)
	}

	probe := func(what string, p *corev1.Probe, path string) {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s probe: want an httpGet probe on %s", what, path)
			return
		}
		if p.HTTPGet.Path != path || p.HTTPGet.Port != intstr.FromString("http") {
			t.Errorf("%s probe: GET %s on %v, want %s on the http port", what, p.HTTPGet.Path, p.HTTPGet.Port.String(), path)
		}
	}
	probe("liveness", c.LivenessProbe, "/livez")
	probe("readiness", c.ReadinessProbe, "/readyz")
	probe("startup", c.StartupProbe, "/livez")

	// The grace period covers the preStop pause and the drain deadline.
	shutdown, err := time.ParseDuration(value("SHUTDOWN_TIMEOUT"))
	if err != nil {
		t.Fatalf("SHUTDOWN_TIMEOUT: %v", err)
	}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil || c.Lifecycle.PreStop.Sleep.Seconds <= 0 {
		t.Fatalf("want a preStop sleep (the image has no shell), got %+v", c.Lifecycle)
	}
	pause := time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	if pod.TerminationGracePeriodSeconds == nil {
		t.Fatal("terminationGracePeriodSeconds is not set")
	}
	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	if grace <= pause+shutdown {
		t.Errorf("terminationGracePeriodSeconds %v must exceed the preStop pause %v + SHUTDOWN_TIMEOUT %v", grace, pause, shutdown)
	}

	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, lim := c.Resources.Requests[r], c.Resources.Limits[r]
		if req.IsZero() || lim.IsZero() || req.Cmp(lim) > 0 {
			t.Errorf("resources %s: request %v, limit %v: want both, request ≤ limit", r, req.String(), lim.String())
		}
	}

	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("container securityContext %+v: want a read-only root, no privilege escalation, all capabilities dropped", sc)
	}
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("pod securityContext %+v: want runAsNonRoot and a non-zero runAsUser", psc)
	}
	if img := c.Image; !strings.Contains(img, ":") || strings.HasSuffix(img, ":latest") {
		t.Errorf("image %q must be pinned to a tag", img)
	}

	// Scraping: the annotations name the admin port and /metrics.
	ann := d.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/path"] != "/metrics" ||
		ann["prometheus.io/port"] != fmt.Sprint(ports["admin"]) {
		t.Errorf("scrape annotations %v: want scrape=true, path=/metrics, port=%d", ann, ports["admin"])
	}

	// Selectors: Deployment, Service and PDB select the pod template.
	podLabels := labels.Set(d.Spec.Template.Labels)
	selects := func(what string, sel *metav1.LabelSelector) {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil || s.Empty() || !s.Matches(podLabels) {
			t.Errorf("%s selector %v does not select the pod template's labels %v (%v)", what, sel, podLabels, err)
		}
	}
	selects("Deployment", d.Spec.Selector)
	selects("PodDisruptionBudget", m.pdb.Spec.Selector)
	if s := labels.SelectorFromSet(m.service.Spec.Selector); len(m.service.Spec.Selector) == 0 || !s.Matches(podLabels) {
		t.Errorf("Service selector %v does not select the pods %v", m.service.Spec.Selector, podLabels)
	}
	for _, p := range m.service.Spec.Ports {
		if _, ok := ports[p.TargetPort.String()]; p.TargetPort.Type != intstr.String || !ok {
			t.Errorf("Service port %s targets %v, want a named container port (%v)", p.Name, p.TargetPort.String(), ports)
		}
	}

	// Disruptions and scaling.
	replicas := int32(1)
	if d.Spec.Replicas != nil {
		replicas = *d.Spec.Replicas
	}
	if m.pdb.Spec.MinAvailable == nil && m.pdb.Spec.MaxUnavailable == nil {
		t.Error("PodDisruptionBudget sets neither minAvailable nor maxUnavailable")
	} else if mn := m.pdb.Spec.MinAvailable; mn != nil && mn.Type == intstr.Int && m.hpa.Spec.MinReplicas != nil && mn.IntVal >= *m.hpa.Spec.MinReplicas {
		t.Errorf("PDB minAvailable %d ≥ HPA minReplicas %d: a node drain could never proceed", mn.IntVal, *m.hpa.Spec.MinReplicas)
	}
	h := m.hpa.Spec
	if h.ScaleTargetRef.Kind != "Deployment" || h.ScaleTargetRef.Name != d.Name || h.ScaleTargetRef.APIVersion != "apps/v1" {
		t.Errorf("HPA targets %+v, want the Deployment %s", h.ScaleTargetRef, d.Name)
	}
	if h.MinReplicas == nil || *h.MinReplicas < 2 || h.MaxReplicas <= *h.MinReplicas || replicas < *h.MinReplicas {
		t.Errorf("HPA min %v max %d (Deployment replicas %d): want min ≥ 2 < max, replicas ≥ min", h.MinReplicas, h.MaxReplicas, replicas)
	}
	cpu := false
	for _, mt := range h.Metrics {
		cpu = cpu || (mt.Type == autoscalingv2.ResourceMetricSourceType && mt.Resource != nil &&
			mt.Resource.Name == corev1.ResourceCPU && mt.Resource.Target.AverageUtilization != nil)
	}
	if !cpu {
		t.Errorf("HPA does not scale on CPU utilisation: %+v", h.Metrics)
	}
}
