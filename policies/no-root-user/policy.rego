# No container may run as root: judged from the pod spec (runAsNonRoot, runAsUser, container
# settings overriding the pod's) and, when the spec leaves it open, from the image config's
# USER (input.images[].facts.user).
package portcullis.no_root_user

import rego.v1

workload_kinds := {"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController"}

pod_spec := input.review.object.spec if input.review.kind.kind == "Pod"

pod_spec := input.review.object.template.spec if input.review.kind.kind == "PodTemplate"

pod_spec := input.review.object.spec.template.spec if input.review.kind.kind in workload_kinds

pod_spec := input.review.object.spec.jobTemplate.spec.template.spec if input.review.kind.kind == "CronJob"

containers contains c if some c in object.get(pod_spec, "initContainers", [])

containers contains c if some c in object.get(pod_spec, "containers", [])

containers contains c if some c in object.get(pod_spec, "ephemeralContainers", [])

# A container's setting, else the pod's.
setting(c, key) := c.securityContext[key]

setting(c, key) := pod_spec.securityContext[key] if not has_setting(c, key)

has_setting(c, key) if _ = c.securityContext[key]

root_user(user) if user == ""

root_user(user) if split(user, ":")[0] in {"root", "0"}

image_of(c) := img if {
	some img in input.images
	img.container.name == c.name
}

fix := "set securityContext.runAsNonRoot: true and runAsUser to a non-zero UID, or rebuild the image with a non-root USER"

violation contains {"msg": msg, "details": {"container": c.name, "fix": fix}} if {
	some c in containers
	setting(c, "runAsUser") == 0
	msg := sprintf("container %q runs as root (runAsUser: 0)", [c.name])
}

violation contains {"msg": msg, "details": {"container": c.name, "fix": fix}} if {
	some c in containers
	open_to_root(c)
	user := image_of(c).facts.user
	root_user(user)
	msg := sprintf("container %q runs as root: its image's USER is %q and the pod spec does not override it", [c.name, user])
}

violation contains {"msg": msg, "details": {"container": c.name, "fix": fix}} if {
	some c in containers
	open_to_root(c)
	not image_user_known(c)
	msg := sprintf("container %q may run as root: neither runAsNonRoot nor runAsUser is set and the image's USER is unknown", [c.name])
}

# Nothing in the pod spec keeps the container from running as the image's user. (Not
# `not setting(c, "runAsNonRoot") == true`: OPA moves the call out of the negation, so the
# body would fail whenever runAsNonRoot is unset; docs/writing-policies.md.)
open_to_root(c) if {
	not non_root(c)
	not has_user(c)
}

non_root(c) if setting(c, "runAsNonRoot") == true

has_user(c) if setting(c, "runAsUser") != null

image_user_known(c) if _ = image_of(c).facts.user
