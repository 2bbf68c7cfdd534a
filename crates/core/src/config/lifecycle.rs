//! `deprecatedImages` and `exceptions`: the checks of what is time-bound (the types are
//! `crate::policy::lifecycle::DeprecatedImage` and `crate::exceptions::Exception`).

use std::collections::BTreeSet;

use super::Problem;
use crate::exceptions::Exception;
use crate::policy::lifecycle::DeprecatedImage;
use crate::reference::{GlobError, ImageGlobs};

/// Checks of `deprecatedImages`.
pub(super) fn validate_deprecated_images(
    deprecated_images: &[DeprecatedImage],
    problems: &mut Vec<Problem>,
) {
    let mut problem = |key: String, message: String| problems.push(Problem { key, message });
    for (i, deprecated) in deprecated_images.iter().enumerate() {
        let key = format!("deprecatedImages[{i}]");
        if deprecated.images.is_empty() {
            problem(
                format!("{key}.images"),
                "must list at least one image glob".into(),
            );
        }
        for (j, pattern) in deprecated.images.iter().enumerate() {
            if let Err(GlobError { message, .. }) = ImageGlobs::new([pattern.as_str()]) {
                problem(format!("{key}.images[{j}]"), message);
            }
        }
        if deprecated.replacement.trim().is_empty() {
            problem(
                format!("{key}.replacement"),
                "must name the image to use instead".into(),
            );
        }
        if deprecated.reason.trim().is_empty() {
            problem(
                format!("{key}.reason"),
                "must say why the image is deprecated".into(),
            );
        }
    }
}

/// Checks of `exceptions`: each one's own, and names used once.
pub(super) fn validate_exceptions(exceptions: &[Exception], problems: &mut Vec<Problem>) {
    let mut problem = |key: String, message: String| problems.push(Problem { key, message });
    let mut exception_names = BTreeSet::new();
    for (i, exception) in exceptions.iter().enumerate() {
        let key = format!("exceptions[{i}]");
        let mut found = Vec::new();
        exception.validate(&key, &mut found);
        for p in found {
            problem(p.key, p.message);
        }
        if !exception.name.is_empty() && !exception_names.insert(exception.name.as_str()) {
            problem(
                format!("{key}.name"),
                format!("{:?} is used by another exception", exception.name),
            );
        }
    }
}
