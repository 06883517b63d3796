{{/* The agent's namespace. */}}
{{- define "flotilla-agent.namespace" -}}
{{ .Values.namespace.name }}
{{- end }}

{{/* The image: repository:tag, or repository@digest when a digest is set. */}}
{{- define "flotilla-agent.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/* Whether the chart creates the Git credential Secret. */}}
{{- define "flotilla-agent.createGitSecret" -}}
{{- if or .Values.git.password .Values.git.sshKey -}}true{{- end -}}
{{- end }}

{{/* The name of the Git credential Secret. */}}
{{- define "flotilla-agent.gitSecret" -}}
{{ .Values.git.existingSecret | default "flotilla-git" }}
{{- end }}
