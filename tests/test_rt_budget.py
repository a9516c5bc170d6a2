"""RT rasterising, dose resampling and DVHs run under the pixel memory budget
(dicomweb.rt.routes): beyond it a clear 422 naming the budget, never an allocation first."""

from __future__ import annotations

import requests
from conftest import start_server, stop_server
from factory import with_meta
from test_pixels_hostile import ADDRESS_SPACE, assert_clean_error

from conformance import generate as gen


def test_rt_work_beyond_the_pixel_budget_is_refused_in_words(tmp_path, backend):
    server = start_server(tmp_path, backend, env={"DICOMWEB_PIXEL_MEMORY_BYTES": "1048576"},
                          memory_limit_bytes=ADDRESS_SPACE)
    try:
        study = gen.RtStudy(seed=777, ct_slices=8, mr_slices=4)
        datasets = [*gen.ct_series_datasets(study), gen.rtstruct_dataset(study),
                    gen.rtdose_dataset(study)]
        response = server.stow(*[with_meta(ds) for ds in datasets])
        assert response.status_code == 200, response.text
        truth = gen.ground_truth(study, [])
        s, se, so = (truth["study_instance_uid"], truth["series_instance_uids"],
                     truth["sop_instance_uids"])

        def url(role: str) -> str:
            return f"{server.url}/studies/{s}/series/{se[role]}/instances/{so[role]}"

        dvh = requests.get(url("rtdose") + "/rt/dose/dvh", timeout=60,
                           params={"structures": so["rtstruct"], "roi": 2})
        assert_clean_error(dvh, 422, "DICOMWEB_PIXEL_MEMORY_BYTES", "DVH of ROI 2")
        on_ct = requests.get(url("rtdose") + "/rt/dose/values", params={"series": se["ct"]},
                             timeout=60)
        assert_clean_error(on_ct, 422, "DICOMWEB_PIXEL_MEMORY_BYTES")
        mask = requests.get(url("rtstruct") + "/rt/rois/2/mask", params={"series": se["ct"]},
                            timeout=60)
        assert_clean_error(mask, 422, "rasterising ROI 2")
        assert requests.get(url("rtdose") + "/rt/dose", timeout=60).status_code == 200
    finally:
        stop_server(server)
