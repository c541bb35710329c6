from .demo_shapes import (CLASSES, demo_shapes_exist, make_demo_shapes,
                          prepare_demo_dataset)

__all__ = [
    'CLASSES', 'make_demo_shapes', 'demo_shapes_exist', 'prepare_demo_dataset'
]
