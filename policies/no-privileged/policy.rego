# No privileged containers: a privileged container has every capability and the host's devices.
package portcullis.no_privileged

import rego.v1

workload_kinds := {"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController"}

pod_spec := input.review.object.spec if input.review.kind.kind == "Pod"

pod_spec := input.review.object.template.spec if input.review.kind.kind == "PodTemplate"

pod_spec := input.review.object.spec.template.spec if input.review.kind.kind in workload_kinds

pod_spec := input.review.object.spec.jobTemplate.spec.template.spec if input.review.kind.kind == "CronJob"

containers contains c if some c in object.get(pod_spec, "initContainers", [])

containers contains c if some c in object.get(pod_spec, "containers", [])

containers contains c if some c in object.get(pod_spec, "ephemeralContainers", [])

violation contains {"msg": msg, "details": {"container": c.name, "fix": "remove securityContext.privileged (or set it to false); grant only the capabilities the container needs"}} if {
	some c in containers
	c.securityContext.privileged == true
	msg := sprintf("container %q is privileged", [c.name])
}
