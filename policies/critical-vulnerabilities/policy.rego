# Images with more critical vulnerabilities than parameters.maxCritical (default 0) in their
# cached scan (input.images[].scan); unscanned images are warned about, or denied with
# parameters.requireScan.
package portcullis.critical_vulnerabilities

import rego.v1

max_critical := object.get(input.parameters, "maxCritical", 0)

require_scan := object.get(input.parameters, "requireScan", false)

violation contains {"msg": msg, "details": {"container": img.container.name, "image": img.image, "fix": fix}} if {
	some img in input.images
	img.scan.state == "found"
	img.scan.summary.critical > max_critical
	msg := sprintf("image %q has %d critical vulnerabilities (%d fixable; scan %s, %s)", [img.image, img.scan.summary.critical, img.scan.summary.fixable, img.scan.summary.source, img.scan.summary.scannedAt])
	fix := "update the affected packages (or the base image) and rebuild"
}

violation contains {"msg": msg, "details": {"container": img.container.name, "image": img.image, "fix": "scan the image (for example with Trivy) before deploying it"}} if {
	some img in unscanned
	require_scan
	msg := sprintf("image %q has no vulnerability scan (%s)", [img.image, img.scan.state])
}

warn contains msg if {
	some img in unscanned
	not require_scan
	msg := sprintf("image %q has no vulnerability scan (%s)", [img.image, img.scan.state])
}

unscanned contains img if {
	some img in input.images
	img.reference != null
	img.scan.state != "found"
}
