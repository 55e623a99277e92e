"""The layout of an export directory (what ``export_all`` writes), with no heavy imports, so
readers of an export (``effnet-predict``) need not load the exporters.

    saved_model/                  SavedModel (serving_default, predict_pixels, predict_pixels_uint8)
    model.keras                   Keras 3 file for fine-tuning (needs `import effnet_tf`)
    model_float32.tflite          TFLite, float32
    model_dynamic_range.tflite    TFLite, int8 weights (dynamic-range quantization)
    model_int8.tflite             TFLite, full integer: int8 weights and activations, uint8 in/out
    model_int16x8.tflite          TFLite, int8 weights and int16 activations, float32 in/out
    model.onnx                    ONNX (opset 17) of predict_pixels: dynamic batch and size
    metadata.json                 variant, image size, class names, input note, versions
"""

SAVED_MODEL_DIR = "saved_model"
KERAS_FILE = "model.keras"
TFLITE_FILES = {None: "model_float32.tflite", "dynamic_range": "model_dynamic_range.tflite",
                "int8": "model_int8.tflite", "int16x8": "model_int16x8.tflite"}
#: The TFLite files each export format writes (keys of TFLITE_FILES).
TFLITE_FORMATS = {"tflite": (None, "dynamic_range"), "tflite_int8": ("int8",), "tflite_int16x8": ("int16x8",)}
#: The formats whose activation ranges are calibrated on real images.
CALIBRATED_FORMATS = ("tflite_int8", "tflite_int16x8")
ONNX_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
