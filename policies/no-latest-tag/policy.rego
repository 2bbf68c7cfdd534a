# No mutable `latest` images: every image names a version tag, or is pinned by digest.
package portcullis.no_latest_tag

import rego.v1

violation contains {"msg": msg, "details": {"container": img.container.name, "image": img.image, "fix": fix}} if {
	some img in input.images
	img.reference != null
	img.tag == "latest"
	not img.pinned
	msg := message(img)
	fix := sprintf("pin a version: %s/%s:<version>, better @sha256:<digest>", [img.registry, img.repository])
}

message(img) := sprintf("image %q uses the mutable tag \"latest\"", [img.image]) if img.tagWritten

message(img) := sprintf("image %q has no tag, so the mutable \"latest\" is pulled", [img.image]) if not img.tagWritten
