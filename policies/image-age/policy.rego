# Images older than parameters.maxAgeDays (default 365), judged on the image config's
# `created` time (input.images[].facts.created) against input.now.
package portcullis.image_age

import rego.v1

max_days := object.get(input.parameters, "maxAgeDays", 365)

day_ns := ((24 * 60) * 60) * 1000000000

age_days(img) := floor((time.parse_rfc3339_ns(input.now) - time.parse_rfc3339_ns(img.facts.created)) / day_ns)

violation contains {"msg": msg, "details": {"container": img.container.name, "image": img.image, "fix": fix}} if {
	some img in input.images
	age := age_days(img)
	age > max_days
	msg := sprintf("image %q was built %d days ago (%s), more than the %d allowed", [img.image, age, img.facts.created, max_days])
	fix := "rebuild the image on a current base image and deploy the new version"
}

# Unknown age: warned, not denied (the registry evidence may be unavailable).
warn contains msg if {
	some img in input.images
	img.reference != null
	not img.facts.created
	msg := sprintf("image %q: build date unknown, age not checked", [img.image])
}
