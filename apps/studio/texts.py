"""UI strings: Vietnamese first, English available (`--ui-lang en`)."""

TEXTS = {
    "vi": {
        "title": "sphinx_vi studio — phát hiện · phân đoạn · chỉnh sửa",
        "image": "Ảnh", "query": "Đối tượng cần tìm (tiếng Việt hoặc tiếng Anh)", "detect": "Phát hiện",
        "segment": "Phân đoạn", "edit": "Chỉnh sửa", "annotated": "Kết quả", "table": "Các đối tượng",
        "raw": "Câu trả lời của mô hình", "mode": "Kiểu chỉnh sửa", "remove": "xoá", "replace": "thay thế",
        "prompt": "Thay bằng (mô tả)", "dilation": "Nới rộng mặt nạ (px)", "blur": "Làm mềm mép (px)",
        "strength": "Cường độ", "guidance": "Guidance", "steps": "Số bước", "seed": "Seed", "edited": "Ảnh đã sửa",
        "download": "Tải xuống", "chat": "Trò chuyện", "message": "Câu hỏi", "send": "Gửi", "clear": "Xoá hội thoại",
        "detect_tab": "Phát hiện & chỉnh sửa", "backends": "Đang dùng", "examples": "Ví dụ",
        "no_image": "Hãy tải lên một ảnh.", "no_query": "Hãy nhập đối tượng cần tìm.",
        "none_found": "Không tìm thấy đối tượng nào.", "downscaled": "Ảnh quá lớn ({w}×{h}) nên đã được thu nhỏ còn {nw}×{nh}.",
        "fallback_seg": "không có SAM: dùng GrabCut", "fallback_inp": "không có Stable Diffusion: dùng OpenCV Telea",
        "unreadable": "Câu trả lời có phần không đọc được: {w}",
        "empty_mask": "Mặt nạ rỗng: hãy bấm thêm điểm lên đối tượng.",
        "no_selection": "Chưa chọn đối tượng nào: hãy đánh dấu ít nhất một dòng trong danh sách.",
        "demo_model": "⚠ **`{name}` là mô hình minh hoạ**: nó chỉ được huấn luyện trên thế giới tổng hợp (hình màu, người que, "
                      "chữ, biểu đồ cột) và không biết ảnh thật. Hãy nạp một mô hình thật: `--model THƯ_MỤC` (chuyển từ SPHINX, "
                      "LLaVA hay Vistral-V bằng `python -m sphinx_vi convert`).",
        "random_model": "⚠ **`{name}` có trọng số ngẫu nhiên** (preset chưa huấn luyện): câu trả lời là vô nghĩa.",
        "converted_model": "Mô hình `{name}`: chuyển từ bản phát hành {source}.",
        "trained_model": "Mô hình `{name}`: {stage}, {steps} bước, dữ liệu `{data}`.",
    },
    "en": {
        "title": "sphinx_vi studio — detect · segment · edit",
        "image": "Image", "query": "What to find (Vietnamese or English)", "detect": "Detect",
        "segment": "Segment", "edit": "Edit", "annotated": "Result", "table": "Detections",
        "raw": "Model answer", "mode": "Edit mode", "remove": "remove", "replace": "replace",
        "prompt": "Replace with (description)", "dilation": "Mask dilation (px)", "blur": "Seam blur (px)",
        "strength": "Strength", "guidance": "Guidance", "steps": "Steps", "seed": "Seed", "edited": "Edited image",
        "download": "Download", "chat": "Chat", "message": "Question", "send": "Send", "clear": "Clear chat",
        "detect_tab": "Detect & edit", "backends": "Backends", "examples": "Examples",
        "no_image": "Please upload an image.", "no_query": "Please type what to find.",
        "none_found": "No objects found.", "downscaled": "The image was too large ({w}×{h}) and was downscaled to {nw}×{nh}.",
        "fallback_seg": "no SAM checkpoint: GrabCut stands in", "fallback_inp": "no Stable Diffusion: OpenCV Telea stands in",
        "unreadable": "Parts of the answer could not be read: {w}",
        "empty_mask": "The mask is empty: click more points on the object.",
        "no_selection": "Nothing selected: tick at least one row of the list.",
        "demo_model": "⚠ **`{name}` is a demo model**: it was trained on the synthetic world only (coloured shapes, stick "
                      "figures, words, bar charts) and knows nothing of real photos. Load a real model with `--model DIR` "
                      "(SPHINX, LLaVA and Vistral-V releases convert with `python -m sphinx_vi convert`).",
        "random_model": "⚠ **`{name}` has random weights** (an untrained preset): its answers are noise.",
        "converted_model": "Model `{name}`: converted from a {source} release.",
        "trained_model": "Model `{name}`: {stage}, {steps} steps, data `{data}`.",
    },
}
