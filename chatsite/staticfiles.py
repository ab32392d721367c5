"""Static files storage: WhiteNoise's compressed manifest storage, with the imports of native ES
modules rewritten to the hashed names too.

The room page's script is a set of ES modules (``static/rooms/room/*.js``, loaded by
``<script type="module">``) that import each other by relative path (``import { x } from
"./render.js";``). Django's ``ManifestStaticFilesStorage`` rewrites those paths to the hashed
file names only with ``support_js_module_import_aggregation`` on (off by default since Django
4.2), so that a page never mixes an old module with a new one after a deploy and every module can
be cached for a year. Each ``import`` / ``export … from`` must end with a semicolon for Django's
pattern to find it (``tests/test_static_modules.py`` checks every module's imports resolve).
"""

from whitenoise.storage import CompressedManifestStaticFilesStorage


class ManifestStaticFilesStorage(CompressedManifestStaticFilesStorage):
    """``CompressedManifestStaticFilesStorage`` that also rewrites ES module imports."""

    support_js_module_import_aggregation = True
