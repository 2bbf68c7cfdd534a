# Every container and init container sets resource limits (parameters.resources, default cpu
# and memory), so one workload cannot starve a node.
package portcullis.required_resource_limits

import rego.v1

workload_kinds := {"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController"}

pod_spec := input.review.object.spec if input.review.kind.kind == "Pod"

pod_spec := input.review.object.template.spec if input.review.kind.kind == "PodTemplate"

pod_spec := input.review.object.spec.template.spec if input.review.kind.kind in workload_kinds

pod_spec := input.review.object.spec.jobTemplate.spec.template.spec if input.review.kind.kind == "CronJob"

# Ephemeral containers cannot set resources, so they are not judged.
containers contains c if some c in object.get(pod_spec, "initContainers", [])

containers contains c if some c in object.get(pod_spec, "containers", [])

required := object.get(input.parameters, "resources", ["cpu", "memory"])

violation contains {"msg": msg, "details": {"container": c.name, "fix": fix}} if {
	some c in containers
	some resource in required
	not c.resources.limits[resource]
	msg := sprintf("container %q sets no %s limit", [c.name, resource])
	fix := sprintf("set resources.limits.%s", [resource])
}
