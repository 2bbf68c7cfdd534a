# Rego unit tests, run by `portcullis policy test` beside the table cases.
package portcullis.no_latest_tag_test

import rego.v1

import data.portcullis.no_latest_tag

image(written, tag, tag_written) := {
	"container": {"name": "app", "kind": "container"},
	"image": written,
	"reference": sprintf("docker.io/library/%s", [written]),
	"registry": "docker.io",
	"repository": "library/nginx",
	"tag": tag,
	"tagWritten": tag_written,
	"pinned": false,
}

test_untagged_is_a_violation if {
	count(no_latest_tag.violation) == 1 with input as {"images": [image("nginx", "latest", false)]}
}

test_a_version_is_fine if {
	count(no_latest_tag.violation) == 0 with input as {"images": [image("nginx:1.27", "1.27", true)]}
}
