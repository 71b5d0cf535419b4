// Builds without FAISS: serve.index faiss is refused with a clear message.
#include "ringtrain/build_config.h"

#if !RINGTRAIN_HAVE_FAISS
#include "ringtrain/core/error.h"
#include "serve/ann_index.h"

namespace ringtrain::serve {

bool haveFaiss() { return false; }

std::shared_ptr<const AnnIndex> buildAnnIndex(const Model&, const AnnOptions&) {
  RT_THROW(ConfigError, "serve.index: faiss, but this ringtrain was built without FAISS (install libfaiss-dev "
                        "and reconfigure)");
}

}  // namespace ringtrain::serve
#endif
