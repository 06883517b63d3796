package synthfleet

import (
	"fmt"
	"os"
	"path/filepath"
)

// chartTemplate is each synthetic chart's one template: it reads every
// value the fleet sets, so that a value change shows in the render.
const chartTemplate = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Chart.Name }}
  labels:
    app: {{ .Chart.Name }}
    region: {{ .Values.region | quote }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels:
      app: {{ .Chart.Name }}
  template:
    metadata:
      labels:
        app: {{ .Chart.Name }}
    spec:
      {{- with .Values.podSecurity }}
      securityContext:
        runAsNonRoot: {{ eq . "restricted" }}
      {{- end }}
      containers:
        - name: app
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
          env:
            - name: HOST
              value: {{ .Values.host | quote }}
            - name: DATA_RESIDENCY
              value: {{ .Values.dataResidency | default "none" | quote }}
          resources:
            requests:
              cpu: {{ .Values.resources.requests.cpu | quote }}
              memory: {{ .Values.resources.requests.memory | quote }}
`

const kustomizeDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
spec:
  replicas: 2
  selector:
    matchLabels:
      app: %[1]s
  template:
    metadata:
      labels:
        app: %[1]s
    spec:
      containers:
        - name: app
          image: registry.example/app:1.0.0
`

// WriteSources writes the charts (charts/app-NNN) and kustomizations
// (apps/app-NNN) the bundles of Write refer to, so that the synthetic
// fleet renders (render --all, preview).
func WriteSources(dir string, bundles int) error {
	for j := range bundles {
		name := fmt.Sprintf("app-%03d", j)
		files := map[string]string{}
		switch j % 3 {
		case 0:
			files[filepath.Join("charts", name, "Chart.yaml")] = fmt.Sprintf("apiVersion: v2\nname: %s\nversion: 0.1.0\n", name)
			files[filepath.Join("charts", name, "values.yaml")] = "replicas: 1\n"
			files[filepath.Join("charts", name, "templates", "deployment.yaml")] = chartTemplate
		case 1:
			files[filepath.Join("apps", name, "kustomization.yaml")] = "resources:\n  - deployment.yaml\n"
			files[filepath.Join("apps", name, "deployment.yaml")] = fmt.Sprintf(kustomizeDeployment, name)
		}
		for path, content := range files {
			if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(path)), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, path), []byte(content), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}
