"""DWARF constants goprobe uses (DWARF 4 and 5), plus Go's own attributes."""

from __future__ import annotations

# Tags
TAG_array_type = 0x01
TAG_formal_parameter = 0x05
TAG_lexical_block = 0x0B
TAG_member = 0x0D
TAG_pointer_type = 0x0F
TAG_compile_unit = 0x11
TAG_structure_type = 0x13
TAG_subroutine_type = 0x15
TAG_typedef = 0x16
TAG_inlined_subroutine = 0x1D
TAG_subrange_type = 0x21
TAG_base_type = 0x24
TAG_constant = 0x27
TAG_subprogram = 0x2E
TAG_variable = 0x34
TAG_unspecified_type = 0x3B

# Attributes
AT_sibling = 0x01
AT_location = 0x02
AT_name = 0x03
AT_byte_size = 0x0B
AT_stmt_list = 0x10
AT_low_pc = 0x11
AT_high_pc = 0x12
AT_language = 0x13
AT_comp_dir = 0x1B
AT_const_value = 0x1C
AT_inline = 0x20
AT_producer = 0x25
AT_upper_bound = 0x2F
AT_abstract_origin = 0x31
AT_count = 0x37
AT_data_member_location = 0x38
AT_decl_file = 0x3A
AT_decl_line = 0x3B
AT_encoding = 0x3E
AT_external = 0x3F
AT_frame_base = 0x40
AT_type = 0x49
AT_variable_parameter = 0x4B
AT_ranges = 0x55
AT_entry_pc = 0x52
AT_call_file = 0x58
AT_call_line = 0x59
AT_call_column = 0x57
AT_addr_base = 0x73
AT_rnglists_base = 0x74
AT_loclists_base = 0x8C
AT_str_offsets_base = 0x72

# Go extensions
AT_go_kind = 0x2900
AT_go_key = 0x2901
AT_go_elem = 0x2902
AT_go_embedded_field = 0x2903
AT_go_runtime_type = 0x2904
AT_go_package_name = 0x2905
AT_go_dict_index = 0x2906
AT_go_closure_offset = 0x2907

# Forms
FORM_addr = 0x01
FORM_block2 = 0x03
FORM_block4 = 0x04
FORM_data2 = 0x05
FORM_data4 = 0x06
FORM_data8 = 0x07
FORM_string = 0x08
FORM_block = 0x09
FORM_block1 = 0x0A
FORM_data1 = 0x0B
FORM_flag = 0x0C
FORM_sdata = 0x0D
FORM_strp = 0x0E
FORM_udata = 0x0F
FORM_ref_addr = 0x10
FORM_ref1 = 0x11
FORM_ref2 = 0x12
FORM_ref4 = 0x13
FORM_ref8 = 0x14
FORM_ref_udata = 0x15
FORM_indirect = 0x16
FORM_sec_offset = 0x17
FORM_exprloc = 0x18
FORM_flag_present = 0x19
FORM_strx = 0x1A
FORM_addrx = 0x1B
FORM_ref_sup4 = 0x1C
FORM_strp_sup = 0x1D
FORM_data16 = 0x1E
FORM_line_strp = 0x1F
FORM_ref_sig8 = 0x20
FORM_implicit_const = 0x21
FORM_loclistx = 0x22
FORM_rnglistx = 0x23
FORM_ref_sup8 = 0x24
FORM_strx1 = 0x25
FORM_strx2 = 0x26
FORM_strx3 = 0x27
FORM_strx4 = 0x28
FORM_addrx1 = 0x29
FORM_addrx2 = 0x2A
FORM_addrx3 = 0x2B
FORM_addrx4 = 0x2C

# Go's reflect.Kind values as stored in DW_AT_go_kind.
GO_KINDS = {
    1: "bool", 2: "int", 3: "int8", 4: "int16", 5: "int32", 6: "int64",
    7: "uint", 8: "uint8", 9: "uint16", 10: "uint32", 11: "uint64", 12: "uintptr",
    13: "float32", 14: "float64", 15: "complex64", 16: "complex128",
    17: "array", 18: "chan", 19: "func", 20: "interface", 21: "map", 22: "ptr",
    23: "slice", 24: "string", 25: "struct", 26: "unsafe.Pointer",
}
