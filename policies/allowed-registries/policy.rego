# Images only from allowed registries or repository prefixes (parameters.registries).
package portcullis.allowed_registries

import rego.v1

allowed := object.get(input.parameters, "registries", [])

# `ghcr.io` allows the whole registry; `ghcr.io/acme` (or `ghcr.io/acme/`) one prefix of it.
allowed_image(img) if img.registry in allowed

allowed_image(img) if {
	some prefix in allowed
	contains(prefix, "/")
	startswith(sprintf("%s/%s", [img.registry, img.repository]), concat("", [trim_suffix(prefix, "/"), "/"]))
}

violation contains {"msg": msg, "details": {"container": img.container.name, "image": img.image, "fix": fix}} if {
	some img in input.images
	img.reference != null
	not allowed_image(img)
	msg := sprintf("image %q comes from %s/%s, which is not an allowed registry", [img.image, img.registry, img.repository])
	fix := sprintf("use an image from %s", [concat(", ", allowed)])
}
