{{/*
The agent's WORKER_AWS_* variables (docs/data-services.md): the data-service
endpoints and the credentials every worker gets. Empty values add nothing.
*/}}
{{- define "esb.workerAwsEnv" -}}
{{- $d := .Values.dataServices -}}
{{- with $d.s3.endpoint }}
- name: WORKER_AWS_ENDPOINT_URL_S3
  value: {{ . | quote }}
{{- end }}
{{- with $d.dynamodb.endpoint }}
- name: WORKER_AWS_ENDPOINT_URL_DYNAMODB
  value: {{ . | quote }}
{{- end }}
{{- with $d.credentialsSecret }}
- name: WORKER_AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: accessKeyId
- name: WORKER_AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: secretAccessKey
- name: WORKER_AWS_SESSION_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: sessionToken
      optional: true
{{- end }}
{{- end -}}
