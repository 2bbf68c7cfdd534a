# Images older than parameters.maxAgeDays (default 365), judged on the build time portcullis
# established (input.images[].build.at: verified SLSA provenance, else the image config's
# `created`), falling back to facts.created, against input.now.
package portcullis.image_age

import rego.v1

max_days := object.get(input.parameters, "maxAgeDays", 365)

day_ns := ((24 * 60) * 60) * 1000000000

built_at(img) := img.build.at if {
	img.build.at
} else := img.facts.created

built_from(img) := "verified SLSA provenance" if {
	img.build.source.kind == "provenance"
} else := "the image config"

age_days(img) := floor((time.parse_rfc3339_ns(input.now) - time.parse_rfc3339_ns(built_at(img))) / day_ns)

violation contains {"msg": msg, "details": {"container": img.container.name, "image": img.image, "fix": fix}} if {
	some img in input.images
	age := age_days(img)
	age > max_days
	msg := sprintf("image %q was built %d days ago (%s, from %s), more than the %d allowed", [img.image, age, built_at(img), built_from(img), max_days])
	fix := "rebuild the image on a current base image and deploy the new version"
}

# Unknown age: warned, not denied (the registry evidence may be unavailable).
warn contains msg if {
	some img in input.images
	img.reference != null
	not built_at(img)
	msg := sprintf("image %q: build date unknown, age not checked", [img.image])
}
